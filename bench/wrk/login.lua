-- POST /api/v1/auth/token (the password grant), the seeded users in turn.
dofile("common.lua")

function init(args)
  arguments(args)
  users = tonumber(read_lines("users.txt")[1])
  password = read_lines("password.txt")[1]
  user = thread_id
end

function request()
  local name = string.format("bench%04d", (user - 1) % users + 1)
  user = user + nthreads
  return wrk.format("POST", "/api/v1/auth/token", {
    ["Content-Type"] = "application/x-www-form-urlencoded",
  }, "grant_type=password&username=" .. name .. "&password=" .. password)
end
