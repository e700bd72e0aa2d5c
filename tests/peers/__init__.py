"""Other programs' own System V test suites run beside `ipcjanitor clean` (issue 22.2)."""
