"""Running a condition: :mod:`.plan` (job matrix, execution, run.json), :mod:`.jobs` (what one job does),
:mod:`.executors` (in-process, job processes, Dask), :mod:`.control` (job processes, timeouts, the run
lock) and :mod:`.status` (what a run folder holds)."""
