"""The project lead's dashboard: label budget, learning curve, stopping signal, annotators, embedding map."""
