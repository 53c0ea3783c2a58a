-- Argo CD health of a mlops.dev DriftMonitor, from the status its operator writes.
-- Drift is news about the traffic, not a fault of the monitor: a monitor that detects
-- drift is Healthy and says so, unless its annotation
-- mlops.dev/argocd-degraded-on-drift is "true".
local hs = { status = "Progressing", message = "Waiting for the first run" }
local function condition(status, kind)
  for _, c in ipairs(status.conditions or {}) do
    if c.type == kind then return c end
  end
  return nil
end
if obj.spec ~= nil and obj.spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "Suspended (spec.suspend)"
  return hs
end
local status = obj.status
if status == nil then return hs end
local generation = obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.message = "Waiting for a run of generation " .. generation
  return hs
end
local ready = condition(status, "Ready")
local drift = condition(status, "DriftDetected")
if ready ~= nil and ready.status == "False" then
  hs.status = "Degraded"
  hs.message = ready.message or ready.reason or "not ready"
  return hs
end
if ready == nil then return hs end
hs.status = "Healthy"
hs.message = (drift and drift.message) or status.message or "Ready"
if drift ~= nil and drift.status == "True" then
  local annotations = obj.metadata.annotations or {}
  if annotations["mlops.dev/argocd-degraded-on-drift"] == "true" then
    hs.status = "Degraded"
  end
  hs.message = "Drift detected: " .. (drift.message or "")
end
return hs
