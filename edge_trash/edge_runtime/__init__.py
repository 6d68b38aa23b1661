"""The sort service that runs on the Coral Dev Board (Python 3.7, stdlib + numpy only)."""
