"""recorderd: the service, its configuration, control tools and wiring of capture and storage."""
