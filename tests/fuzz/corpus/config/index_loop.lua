return { id = "n1", election_timeout_ms = setmetatable({}, { __index = function() while true do end end }) }
