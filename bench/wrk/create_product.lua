-- POST /api/v1/products as the next user; every sku is new (the run tag is in it).
dofile("common.lua")

function init(args)
  arguments(args)
  load_tokens()
end

function request()
  return create_request()
end
