"""What both modes share: settings, errors, the one Docker gateway, local HTTP, ports, versions."""
