-- 90% reads, 10% writes: product by id 40%, first page 20%, search 10%,
-- /users/me 20%, create 5%, PATCH with If-Match 5%. Reads of single products
-- avoid the PATCH products, so that only a PATCH's answer moves their versions.
dofile("common.lua")

function init(args)
  arguments(args)
  load_tokens()
  load_owned_products()
  search = read_lines("search.txt")[1]
  first_readable = #read_lines("patch.txt") + 1
  math.randomseed(104729 * thread_id)
end

function request()
  local pick = math.random(100)
  if pick <= 40 then
    return wrk.format("GET", "/api/v1/products/" .. math.random(first_readable, products))
  elseif pick <= 60 then
    return wrk.format("GET", "/api/v1/products")
  elseif pick <= 70 then
    return wrk.format("GET", "/api/v1/products?q=" .. search)
  elseif pick <= 90 then
    return wrk.format("GET", "/api/v1/users/me", { ["Authorization"] = "Bearer " .. next_token() })
  elseif pick <= 95 then
    return create_request()
  end
  return patch_request()
end

function response(status, headers, body)
  count(status)
  patch_response(status, headers, body)
end
