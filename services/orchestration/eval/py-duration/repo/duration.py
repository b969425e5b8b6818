import re

def parse_duration(text):
    seconds = 0
    for amount, unit in re.findall(r"(\d+)([hs])", text):
        seconds += int(amount) * {"h": 3600, "s": 1}[unit]
    return seconds
