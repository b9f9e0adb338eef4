"""What one request may ask for and how it is resolved: device and precision, image sizes, every limit, and the
checks each public entry point runs once."""
