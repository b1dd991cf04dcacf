"""A run's life, from the API's call to its end upstream (no HTTP). Read in this order:

- `service`: what the API calls (start and wait, submit tool outputs, retrieve, cancel),
  with a `RunRequest`; checks the thread and holds its lock.
- `driver`: one `RunDriver` per run: the attempts inside the deadline, the waits, the
  rounds of server tools, the client's turn, the end settled and recorded.
- `recovery`: the process holding a thread's lock, its heartbeat, and the adoption of a dead
  process's runs.
- `plan`: `RunPlan`, what a run carries between rounds, and the run as its client sees it.
- `polling`: `wait_for_run`, its schedule, its `WaitResult`, the process's budget of looks.
- `events`: the facts a listener hears while a run goes on (a streamed answer's source).
- `steps`: `StepBook`, the run's steps (tool calls, replies), kept and told as they change.
- `errors`: how a start fails before a run is confirmed.
"""
