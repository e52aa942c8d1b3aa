-- PATCH /api/v1/products/{id} with If-Match: each thread owns its products and
-- knows their versions (see load_owned_products in common.lua).
dofile("common.lua")

function init(args)
  arguments(args)
  load_owned_products()
end

function request()
  return patch_request()
end

function response(status, headers, body)
  count(status)
  patch_response(status, headers, body)
end
