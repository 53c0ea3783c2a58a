-- Argo CD health of a mlops.dev ModelVersion, from the status its operator writes.
local hs = { status = "Progressing", message = "Waiting for the operator" }
local status = obj.status
if status == nil then return hs end
local generation = obj.metadata.generation
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.message = "Waiting for the operator to act on generation " .. generation
  return hs
end
for _, c in ipairs(status.conditions or {}) do
  if c.type == "ArtifactVerified" and c.status == "False" and c.reason ~= "Verifying" then
    hs.status = "Degraded"
    hs.message = c.message or c.reason or "artifact not verified"
    return hs
  end
end
if status.phase == "Ready" then
  hs.status = "Healthy"
  local approval = (status.approval or {}).state
  hs.message = "Artifact verified" .. (approval and ("; approval " .. approval) or "")
elseif status.phase == "Failed" then
  hs.status = "Degraded"
  hs.message = status.message or "Failed"
else
  hs.message = "Artifact " .. string.lower(status.phase or "pending")
end
return hs
