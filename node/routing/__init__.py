"""Global search routing: a share's topics and signed summary, and a query's way to the few shares that matter."""
