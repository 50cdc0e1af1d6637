n = int(input())
a = list(map(int, input().split()))
t = int(input())
seen = {}
for j, x in enumerate(a, 1):
    if t - x in seen:
        print(seen[t - x], j)
        break
    seen.setdefault(x, j)
