"""The analytics dashboard (Streamlit): a front like serving/, reading only the marts and the model registry.

`churnops dashboard` starts it (:mod:`dashboard.cli`); :mod:`dashboard.app` is the Streamlit script and
:mod:`dashboard.pages` its pages. It imports the core (``churnops``) and nothing else of the project.
"""
