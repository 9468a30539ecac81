"""Cache (key-value) methods: Tip-Adapter and Tip-Adapter-F."""
