"""research: the tools behind the shipped choices, kept out of the installed packages -- the layer
and feature probe (`python -m research.layer_probe`), the prompt choice (`python -m
research.choose_prompt`) and the Qwen2.5-Coder report (`bash research/qwen_report.sh`). They may
import every package; nothing in the packages imports them."""
