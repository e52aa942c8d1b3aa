-- One fixed request (the URL's path and query): health, the first page, a search.
dofile("common.lua")

function init(args)
  arguments(args)
end
