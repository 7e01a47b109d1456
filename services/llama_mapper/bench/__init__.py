"""llama-mapper: the Locust bench of the serving stack, judged against the registry's targets."""
