-- Workload for the lua5.4 compatibility test (lua.sh, scripts/compat): every
-- Lua allocation goes through realloc/free (lauxlib's l_alloc), so table
-- growth and shrinking, string interning and concatenation, string.gsub and
-- patterns, table.sort and table.concat, closures, coroutines and full
-- garbage collections all land in the allocator.
--
--   lua5.4 lua_workload.lua [SCALE]     SCALE 1 (default) is a second or two
--
-- Deterministic: its own generator, keys sorted before printing, no
-- addresses; a checksum of everything printed ends the output.
local scale = tonumber(arg[1] or "1")
local seed = 12345
local function rnd(n)
  seed = (seed * 1103515245 + 12345) % 2147483648
  return (seed // 65536) % n
end

local words = { "zend", "chunk", "bin", "page", "heap", "slot", "run", "huge",
  "request", "leak", "arena", "cache", "free", "alloc", "mmap", "brk", "lua",
  "table", "string", "closure" }
local function word(n)
  local t = {}
  for i = 1, n do t[i] = words[rnd(#words) + 1] end
  return table.concat(t, "-")
end

local sum = 0
local function emit(line)
  for i = 1, #line do sum = (sum * 31 + line:byte(i)) % 4294967296 end
  print(line)
end

local function sorted_keys(t)
  local ks = {}
  for k in pairs(t) do ks[#ks + 1] = k end
  table.sort(ks)
  return ks
end

-- 1. a table of strings grown, appended to, pruned
local tab, nkeys = {}, 0
for i = 0, 80000 * scale - 1 do
  local k = string.format("k%d:%s", i % 7919, word(1 + i % 4))
  if tab[k] == nil then nkeys = nkeys + 1 end
  tab[k] = (tab[k] or "") .. words[i % #words + 1]:sub(1, 1 + i % 5)
  if i % 3 == 0 then
    local d = string.format("k%d:%s", (i * 31) % 7919, words[i % #words + 1])
    if tab[d] ~= nil then tab[d] = nil; nkeys = nkeys - 1 end
  end
end
local chars = 0
for _, v in pairs(tab) do chars = chars + #v end
emit(string.format("table: %d keys, %d value chars", nkeys, chars))
local ks = sorted_keys(tab)
for i = 1, 40 do emit("  " .. ks[i] .. " = " .. tab[ks[i]]:sub(1, 40)) end

-- 2. strings: concat, gsub, patterns, rep, reverse, upper
local parts = {}
for i = 0, 30000 * scale - 1 do parts[#parts + 1] = word(1 + i % 3) .. ":" .. i end
local text = table.concat(parts, " ")
emit(string.format("text: %d chars", #text))
local swapped, n = text:gsub("(%a+)%-(%a+)", "%2+%1")
emit(string.format("swapped: %d substitutions, %d chars, upper %d", n, #swapped, #swapped:upper()))
local hits = {}
for w, d in text:gmatch("((%a+)%-?%a*):%d*7%f[%D]") do hits[w] = (hits[w] or 0) + 1 end
local hk = sorted_keys(hits)
emit(string.format("pattern hits: %d distinct", #hk))
for i = 1, math.min(15, #hk) do emit(string.format("  %s %d", hk[i], hits[hk[i]])) end
local acc = ""
for i = 0, 50000 * scale - 1 do
  acc = acc .. string.rep(words[i % #words + 1], 1 + i % 3)
  if #acc > 8192 then acc = acc:sub(4097) end
end
emit(string.format("accumulator: %d chars, reversed head %s", #acc, acc:reverse():sub(1, 24)))

-- 3. numbers: sort, group, statistics
local nums = {}
for i = 1, 100000 * scale do nums[i] = rnd(30000) * 1000 + rnd(1000) end
local sn = table.move(nums, 1, #nums, 1, {})
table.sort(sn)
local total = 0
for i = 1, #nums do total = total + nums[i] end
emit(string.format("numbers: min %d max %d median %d sum %d", sn[1], sn[#sn], sn[#sn // 2 + 1], total))
local groups = {}
for i = 1, #nums do
  local g = nums[i] % 97
  groups[g] = groups[g] or {}
  table.insert(groups[g], nums[i])
end
local big, small = 0, math.huge
for g = 0, 96 do big = math.max(big, #groups[g]); small = math.min(small, #groups[g]) end
emit(string.format("groups: largest %d smallest %d", big, small))
table.sort(nums, function(a, b) return a % 1000 < b % 1000 or (a % 1000 == b % 1000 and a < b) end)
emit(string.format("custom sort: first %d last %d", nums[1], nums[#nums]))

-- 4. trees of tables, removals, closures, coroutines
local tree = {}
for i = 0, 20000 * scale - 1 do
  local tags = {}
  for j = 0, i % 5 do tags[#tags + 1] = words[(i + j) % #words + 1] end
  tree[#tree + 1] = { id = i, name = word(2), tags = tags, meta = { depth = i % 7 } }
  if i % 4 == 3 then table.remove(tree, rnd(#tree) + 1) end
end
local ntags, h = 0, 0
for _, node in ipairs(tree) do
  ntags = ntags + #node.tags
  local s = node.id .. ":" .. node.name .. ":" .. table.concat(node.tags, ",") .. ":" .. node.meta.depth
  for i = 1, #s do h = (h * 33 + s:byte(i)) % 4294967296 end
end
emit(string.format("tree: %d nodes, %d tags, hash %d", #tree, ntags, h))
local counters = {}
for i = 1, 1000 do local c = i; counters[i] = function(d) c = c + d; return c end end
local csum = 0
for r = 1, 50 * scale do for i = 1, #counters do csum = csum + counters[i](r) end end
emit("closures: " .. csum)
local function producer(n)
  return coroutine.wrap(function()
    for i = 1, n do coroutine.yield(string.rep(words[i % #words + 1], 1 + i % 7)) end
  end)
end
local cos, produced = {}, 0
for i = 1, 200 do cos[i] = producer(100 * scale) end
for _ = 1, 100 * scale do
  for i = 1, #cos do produced = produced + #cos[i]() end
end
emit("coroutines: " .. produced .. " chars")

-- 5. a full collection must leave everything intact
collectgarbage("collect")
local still = 0
for _, v in pairs(tab) do still = still + #v end
emit(string.format("after gc: %d value chars, %d tree nodes", still, #tree))
print("checksum " .. sum)
