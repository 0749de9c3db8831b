-- Argo CD health of a Kiln ModelDeployment (kiln.dev/v1alpha1), read from status.phase.
-- Healthy counts only once the operator has observed the current spec (status.observedGeneration
-- equals metadata.generation), so a sync that changes the spec is not reported Healthy from the
-- previous rollout's status.
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
  Progressing = "Progressing",
  Paused = "Suspended",
  Healthy = "Healthy",
  Degraded = "Degraded",
  RolledBack = "Degraded",
}

local phase = status.phase
local message = status.message
if message == nil or message == "" then
  message = "ModelDeployment is " .. tostring(phase)
end

hs.status = health[phase]
hs.message = message
if hs.status == nil then
  hs.status = "Unknown"
  hs.message = "unknown phase " .. tostring(phase) .. ": " .. message
  return hs
end

if phase == "Healthy" then
  local generation = nil
  if obj.metadata ~= nil then
    generation = obj.metadata.generation
  end
  if generation ~= nil and status.observedGeneration ~= generation then
    hs.status = "Progressing"
    hs.message = "waiting for the operator to observe generation " .. tostring(generation)
  end
end
return hs
