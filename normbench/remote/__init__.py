"""The trusted judge: checks run in the process that never imports plugin code, on modules that live in the
plugin's process and are reached through a data-only request protocol. `tensors` carries tensors as
bytes, `server` is the plugin's side, `proxy` the trusted side, `judge` says which items are judged there."""
