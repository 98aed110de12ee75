"""The study report: PNG figures in the paper's style and report.md / report.html."""
