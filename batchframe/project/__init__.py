"""Project loading: finding and importing the user's code, configs, parameters and their parsing, DI."""
