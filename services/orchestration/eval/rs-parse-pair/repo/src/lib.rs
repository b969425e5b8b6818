pub fn parse_pair(line: &str) -> Option<(String, String)> {
    let (key, value) = line.split_once('=')?;
    Some((key.to_string(), value.to_string()))
}
