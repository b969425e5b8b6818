NUMERALS = [(1000, 'M'), (500, 'D'), (100, 'C'), (50, 'L'), (10, 'X'), (5, 'V'), (1, 'I')]

def to_roman(number):
    out = ''
    for value, letter in NUMERALS:
        while number >= value:
            out += letter
            number -= value
    return out
