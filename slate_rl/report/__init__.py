"""The report: result JSONs -> tables, statistics, figures and ``results/report.md``.

* :mod:`slate_rl.report.results`: read the result JSONs of a results directory (skipping, with
  a warning, the files that cannot be used);
* :mod:`slate_rl.report.tables`: per-environment tables (95% CIs, Welch's t-tests against the
  best method, normalised scores of offline methods);
* :mod:`slate_rl.report.plots`: learning curves and bar charts (matplotlib, imported lazily);
* :mod:`slate_rl.report.markdown`: the Markdown text.

Imports only :mod:`slate_rl.core` from the package.
"""
