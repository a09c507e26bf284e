"""The pilot's full-screen Textual app: the application, its screens, widgets, messages and styles.

Importing this package imports nothing heavy; ``application`` brings Textual in.
"""
