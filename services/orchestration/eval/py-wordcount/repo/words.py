from collections import Counter

def word_counts(text):
    return Counter(text.split())
