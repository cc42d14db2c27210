"""Hardware back ends (optional extras): code that needs a vendor toolchain lives here, out of the core."""
