"""Step 7, cleaning: English language ID, quality heuristics, adult/profanity filtering, MinHash dedup."""
