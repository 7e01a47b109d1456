"""Every setting of every service and tool, one class per component, each variable declared once."""
