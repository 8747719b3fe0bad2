"""The API's routes, thin: who may call (a dependency), what it takes, what it returns."""
