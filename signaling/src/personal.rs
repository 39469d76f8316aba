//! Personal data of residents: the ID number (居民身份证号码) and name, validated and masked.
//!
//! The full values live only in the database and in responses to the approver holding the case;
//! everything else (logs, queues, lists, other roles) sees [`mask_name`] and [`mask_id_number`].

use std::fmt;

/// Why an ID number was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdNumberError {
    /// Not 18 characters long.
    Length(usize),
    /// A character other than a digit (or a final X) where a digit belongs.
    NotDigits,
    /// The birth date (characters 7–14) is not a real date.
    BirthDate,
    /// The check character (GB 11643-1999, ISO 7064 MOD 11-2) does not match.
    CheckDigit { expected: char, found: char },
}

impl fmt::Display for IdNumberError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Length(n) => write!(f, "an ID number has 18 characters, this one has {n}"),
            Self::NotDigits => write!(f, "an ID number is 17 digits followed by a digit or X"),
            Self::BirthDate => write!(
                f,
                "characters 7-14 of the ID number are not a valid birth date"
            ),
            Self::CheckDigit { expected, found } => write!(
                f,
                "the ID number's check character is {found}, but its first 17 digits give {expected} (GB 11643)"
            ),
        }
    }
}

/// Validates an 18-character resident ID number per GB 11643-1999 and returns it normalised
/// (upper-case X).
pub fn validate_id_number(input: &str) -> Result<String, IdNumberError> {
    let s = input.trim().to_ascii_uppercase();
    let chars: Vec<char> = s.chars().collect();
    if chars.len() != 18 {
        return Err(IdNumberError::Length(chars.len()));
    }
    let (body, check) = chars.split_at(17);
    if !body.iter().all(|c| c.is_ascii_digit()) || !(check[0].is_ascii_digit() || check[0] == 'X') {
        return Err(IdNumberError::NotDigits);
    }
    let digits: Vec<u32> = body.iter().map(|c| c.to_digit(10).unwrap_or(0)).collect();
    let year = digits[6..10].iter().fold(0, |a, d| a * 10 + d);
    let month = digits[10] * 10 + digits[11];
    let day = digits[12] * 10 + digits[13];
    let month = u8::try_from(month)
        .ok()
        .and_then(|m| time::Month::try_from(m).ok());
    let valid_date = month
        .and_then(|m| time::Date::from_calendar_date(year as i32, m, day as u8).ok())
        .is_some_and(|_| year >= 1900);
    if !valid_date {
        return Err(IdNumberError::BirthDate);
    }
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    const CHECK: [char; 11] = ['1', '0', 'X', '9', '8', '7', '6', '5', '4', '3', '2'];
    let sum: u32 = digits.iter().zip(WEIGHTS).map(|(d, w)| d * w).sum();
    let expected = CHECK[(sum % 11) as usize];
    if expected != check[0] {
        return Err(IdNumberError::CheckDigit {
            expected,
            found: check[0],
        });
    }
    Ok(s)
}

/// Masks an ID number: the first 6 (region) and last 4 characters stay, the birth date is hidden.
pub fn mask_id_number(id: &str) -> String {
    let chars: Vec<char> = id.chars().collect();
    if chars.len() < 10 {
        return "*".repeat(chars.len());
    }
    let head: String = chars[..6].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}{}{tail}", "*".repeat(chars.len() - 10))
}

/// Masks a name: the family name (first character) stays, the rest become `*`.
pub fn mask_name(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => {
            let rest = chars.count().max(1);
            format!("{first}{}", "*".repeat(rest))
        }
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A syntactically valid, made-up number (region 110101, born 1990-03-07).
    const VALID: &str = "11010119900307109X";

    #[test]
    fn a_number_with_the_right_check_character_is_accepted_and_normalised() {
        assert_eq!(validate_id_number("11010119900307109x").unwrap(), VALID);
        assert_eq!(
            validate_id_number("110101199003071081").unwrap(),
            "110101199003071081"
        );
    }

    #[test]
    fn a_wrong_check_character_is_refused_naming_the_expected_one() {
        let err = validate_id_number("110101199003071091").unwrap_err();
        assert_eq!(
            err,
            IdNumberError::CheckDigit {
                expected: 'X',
                found: '1'
            }
        );
        assert!(err.to_string().contains("GB 11643"));
    }

    #[test]
    fn wrong_length_letters_and_impossible_birth_dates_are_refused() {
        assert_eq!(
            validate_id_number("1101011990030766").unwrap_err(),
            IdNumberError::Length(16)
        );
        assert_eq!(
            validate_id_number("11010119900307A63X").unwrap_err(),
            IdNumberError::NotDigits
        );
        assert_eq!(
            validate_id_number("110101199002307664").unwrap_err(),
            IdNumberError::BirthDate
        );
    }

    #[test]
    fn masking_hides_the_birth_date_and_the_given_name() {
        assert_eq!(mask_id_number(VALID), "110101********109X");
        assert_eq!(mask_name("张三"), "张*");
        assert_eq!(mask_name("欧阳娜娜"), "欧***");
        assert_eq!(mask_name("李"), "李*");
    }
}
