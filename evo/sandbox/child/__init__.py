"""What runs inside the training process: the channel's client (channel) and the model's export (graph_export)."""
