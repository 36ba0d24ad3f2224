"""The run report: ``build.build_report(run_dir)`` turns a run's result dirs into report.html / report.md."""
