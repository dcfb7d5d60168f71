"""Drawing what the analyses computed: run plots and tables, the comparison report."""
