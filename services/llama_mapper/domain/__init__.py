"""The domain: taxonomy, findings, detector readers, mapping tables, rules, result, prompt, metrics."""
