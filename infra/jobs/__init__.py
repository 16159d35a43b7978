"""How the data jobs (ingest, tokenize) run: one protocol, one runner per engine, one engine config.

    protocol.py      DataJob: units, plan, per-worker setup, prepare + commit a unit, summary
    run.py           run_job: plan check, skip committed units, pick the engine's runner, summarize
    local_runner.py  sequential in this process (the reference)
    beam_runner.py   Apache Beam: one element per unit, setup once per worker (imported for beam only)
    ray_runner.py    Ray: CPU tasks prepare, an actor pool commits (imported for ray only)
    config.py        EngineConfig (engine, progress, track, beam.*, ray.*) every data job's config inherits
    progress.py      Progress (tqdm with counters) and PartWatcher (commit markers appearing)
    cli_args.py      the engine flags every data job's command takes (standard library only)
"""
