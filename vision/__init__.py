"""Images: chair readers, procedural chairs, the up-convolutional decoder and rendering."""
