"""The report folder of ``python -m analysis report`` (``folder``): tables, ``figures`` (Fig. 3-5, 7, 10 of the
paper), the fit's figures and tables; ``style`` holds the family colours and the PNG writer every figure uses."""
