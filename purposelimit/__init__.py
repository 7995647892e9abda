"""purposelimit: executable purpose limitation (GDPR art. 5(1)(b), (c), (e); LIL art. 4)."""
