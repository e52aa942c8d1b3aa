-- GET /api/v1/products/{id}, ids drawn over every seeded product.
dofile("common.lua")

function init(args)
  arguments(args)
  math.randomseed(7919 * thread_id)
end

function request()
  return wrk.format("GET", "/api/v1/products/" .. math.random(1, products))
end
