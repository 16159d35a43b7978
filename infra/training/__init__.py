"""The shared training framework of the training jobs (video tokenizer, audio tokenizer, LM, SR).

    interface    the Stateful trainer protocol a job implements (train_step, state, evaluate, export)
    checkpoints  the checkpoint manager: <run_dir>/checkpoints/step_<N:08d>/, meta.json, keep-N,
                 refusal of a changed config or an old layout
    loop         the cadence: log / eval / save every N, stop flag, time limit, absolute stop_after
    stopping     SIGTERM/SIGINT -> a STOP file in the run directory that rank 0 polls
    launch       in-process (--num-workers 0) or N Ray Train workers (--num-workers N >= 1)
    zero         DeepSpeed ZeRO pieces of the deepspeed engines (LM, SR): the JSON config, zero.Init
                 weights, consolidated export, engine checkpoints
MLflow goes through `videopoet.tracking.Tracker`.
"""
