"""``chargpt-tui bench``: the project's speed claims, measured side by side in one process.

Method. Each comparison's variants run in the same process, one after the other and in
alternating order (A B, then B A, ...), after one warm-up run of each, several times. We report
the median and the *spread* (half the min–max range, relative to the median: 0.05 = ±5 %). A
target is checked on a ratio of two variants from the same run — the median of the per-repeat
ratios — so a slow or busy machine moves both sides together and the verdict stays meaningful.

Cases (issue 4):

1. training throughput — fused vs the lecture's per-head attention, compiled vs eager;
2. sampling throughput — the KV cache vs re-running the context every step;
3. beam search — widths 4 and 8 vs greedy on the same cache;
4. time to the first character of an answer — idle and while training runs in a thread;
5. UI cost — training with the Textual app running headless (live panels, prompts typed every
   few seconds) vs the engine alone;
6. answering a prompt while training runs — with and without ``TrainerControl.hold``;
7. start-up — wall time of ``chargpt-tui --help``, and (7b) from process start to the app's
   first paint.

Layout: ``harness`` (plans, variants, results), ``engine_cases`` (1-4, 6), ``app_cases`` (5, 7:
the only module that imports the app, inside its cases; 7b runs it in a fresh process),
``runner`` (every case, the report). The one-off probes and experiments that shaped the
project (against nanoGPT, the recipe's ablation, the app at a GPU's pace, ...) are scripts in
the repository's ``benchmarks/`` folder, next to their results.

Speed does not depend on what the text says, so the bench trains on pseudo-random text over
Tiny Shakespeare's 65-character alphabet and samples from untrained weights: no download, no
checkpoint, the same work for every run.
"""
