"""From captures to what a person reads: the analysis and its verdict, the timeline picture, the
report (report.json, the verdict table, report.html, JUnit) and the cell's artefacts."""
