"""The Streamlit script of the analytics dashboard (`churnops dashboard` runs it; so does AppTest)."""

from dashboard.pages import main

main()
