-- Argo CD health of a Kiln ModelVersion (kiln.dev/v1alpha1), read from status.phase.
-- Runs in Argo CD's Lua sandbox: only the base and table libraries are used.
local hs = {}
local status = obj.status
if status == nil or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "waiting for the operator"
  return hs
end

local health = {
  Pending = "Progressing",
  Validating = "Progressing",
  Validated = "Healthy",
  Rejected = "Degraded",
}

local phase = status.phase
local message = status.message
if message == nil or message == "" then
  message = "ModelVersion is " .. tostring(phase)
end

hs.status = health[phase]
hs.message = message
if hs.status == nil then
  hs.status = "Unknown"
  hs.message = "unknown phase " .. tostring(phase) .. ": " .. message
end
return hs
