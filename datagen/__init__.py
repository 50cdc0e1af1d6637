"""datagen: judged rollout trees and the per-token training data made from them.

`datagen.tree`: a trunk per problem, then K rollouts at each of its F lowest-probability tokens,
every rollout judged (TreeConfig, the stored TreeRow); `datagen.export`: the training examples of
trees or of `bench quality` samples, split by problem (ExampleRow, SampleRow); `datagen.cli`: the
`datagen` command (build, stats, export).

May import common, judge and lm (layers, bottom to top: common, judge, lm, datagen, valuemodel,
engine, bench; each imports only the ones below it).
"""
