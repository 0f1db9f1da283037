"""Boot integration: detect the running init system, plan the boot files, apply and undo them."""
