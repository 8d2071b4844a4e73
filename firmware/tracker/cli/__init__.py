# The technician's command line on the console (docs/console.md).
