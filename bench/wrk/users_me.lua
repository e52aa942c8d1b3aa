-- GET /api/v1/users/me, each request with the next user's token (made before the run).
dofile("common.lua")

function init(args)
  arguments(args)
  load_tokens()
end

function request()
  return wrk.format("GET", "/api/v1/users/me", { ["Authorization"] = "Bearer " .. next_token() })
end
