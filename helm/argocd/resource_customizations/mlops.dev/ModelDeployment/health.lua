-- Argo CD health of a mlops.dev ModelDeployment, from the status its operator writes.
local hs = { status = "Progressing", message = "Waiting for the operator" }
local function condition(status, kind)
  for _, c in ipairs(status.conditions or {}) do
    if c.type == kind then return c end
  end
  return nil
end
local status = obj.status
if status == nil then return hs end
local generation = obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.message = "Waiting for the operator to act on generation " .. generation
  return hs
end
local canary = status.canary or {}
local degraded = condition(status, "Degraded")
local ready = condition(status, "Ready")
if status.phase == "RolledBack" then
  hs.status = "Degraded"
  hs.message = "Canary rolled back: " .. (canary.message or "")
elseif status.phase == "Paused" then
  hs.status = "Suspended"
  hs.message = "Canary paused: " .. (canary.message or "")
elseif degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = degraded.message or degraded.reason or ""
elseif status.phase == "Ready" then
  hs.status = "Healthy"
  hs.message = (ready and ready.message) or "Ready"
elseif status.phase == "Progressing" and status.canary ~= nil then
  hs.message = "Canary at " .. (canary.weight or 0) .. "%: " .. (canary.message or "")
elseif ready ~= nil and ready.message ~= nil and ready.message ~= "" then
  hs.message = ready.message
end
return hs
