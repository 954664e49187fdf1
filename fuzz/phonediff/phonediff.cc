/*-------------------------------------------------------------------------
 *
 * phonediff.cc
 *	  Differential test: anonymize's canonical phone numbers against
 *	  libphonenumber's E.164, for Norway, Sweden, Denmark, the UK and
 *	  Germany.
 *
 * For each country it generates valid numbers (random national
 * significant numbers of every length, and variations of libphonenumber's
 * example number of every type, kept only when IsValidNumber() says so),
 * writes each the ways people write them (national with the trunk prefix
 * and with spaces, dashes, dots, parentheses or nothing between groups;
 * international with '+'; dialled from abroad with 00; tel: URIs) and
 * checks that anon_phone_canonical(), with anonymize.country_code and
 * anonymize.trunk_prefix set for that country, gives libphonenumber's
 * E.164.  Each written form is first parsed back by libphonenumber, so a
 * form that even libphonenumber reads differently is not blamed on us.
 *
 * Disagreements are grouped and printed.  The ones README.md documents
 * ("Phone numbers: where we differ from libphonenumber") are listed in
 * known_difference() and do not fail the test; any other does.  A second
 * part prints, without failing, how both read notations outside the
 * seed's rule (a "(0)" after the country code, Italian numbers, ...).
 *
 * Usage: phonediff [numbers-per-country] [seed]
 *
 *-------------------------------------------------------------------------
 */
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <phonenumbers/phonenumber.pb.h>
#include <phonenumbers/phonenumberutil.h>

extern "C"
{
#include "anonymize_core.h"
}

using i18n::phonenumbers::PhoneNumber;
using i18n::phonenumbers::PhoneNumberUtil;
using std::string;

struct Country
{
	const char *region;
	const char *cc;
	const char *trunk;			/* anonymize.trunk_prefix for it */
	const char *abroad;			/* a region that dials out with 00 */
};

static const Country countries[] = {
	{"NO", "47", "", "DE"},
	{"SE", "46", "0", "DE"},
	{"DK", "45", "", "DE"},
	{"GB", "44", "0", "DE"},
	{"DE", "49", "0", "NO"},
};

struct Form
{
	string		label;
	string		text;
	bool		strict;			/* typed on the page: strict and lenient */
};

static string
ours(const string &s, bool lenient, const Country &c)
{
	char		out[ANON_PHONE_CANON_SIZE];

	if (anon_phone_canonical(s.data(), s.size(), lenient, c.cc, c.trunk, out)
		!= ANON_PHONE_OK)
		return "(rejected)";
	return out;
}

static string
replace_all(string s, char from, char to)
{
	for (char &ch : s)
		if (ch == from)
			ch = to;
	return s;
}

static string
digits_only(const string &s, bool keep_plus)
{
	string		r;

	for (char ch : s)
		if ((ch >= '0' && ch <= '9') || (keep_plus && ch == '+'))
			r += ch;
	return r;
}

/* the first group of a formatted number in parentheses: "(0171) 1234567" */
static string
paren_first_group(const string &s)
{
	size_t		sp = s.find_first_of(" -");

	if (sp == string::npos)
		return s;
	return "(" + s.substr(0, sp) + ")" + s.substr(sp);
}

/*
 * Differences README.md documents.  Keep each predicate as narrow as the
 * case it names.
 */
static const char *
known_difference(const Country &c, const string &nsn, const Form &f)
{
	(void) f;
	/* E.164 allows 15 digits; libphonenumber's German plan allows more */
	if (strlen(c.cc) + nsn.size() > ANON_PHONE_MAX_DIGITS)
		return "more than 15 digits: libphonenumber accepts, we reject";
	return NULL;
}

/* Notations outside the seed's rule: how each side reads them. */
struct Explore
{
	const char *region;
	const char *cc;
	const char *trunk;
	const char *text;
};

static const Explore explore[] = {
	{"GB", "44", "0", "+44 (0)20 7946 0958"},
	{"GB", "44", "0", "0044 (0)20 7946 0958"},
	{"GB", "44", "0", "+44 (0) 7700 900123"},
	{"GB", "44", "0", "+44 020 7946 0958"},
	{"DE", "49", "0", "+49 (0)30 1234567"},
	{"DE", "49", "0", "+49 030 1234567"},
	{"DE", "49", "0", "0049 (0)30 1234567"},
	{"SE", "46", "0", "+46 (0)8 123 456 78"},
	{"SE", "46", "0", "+46 08-123 456 78"},
	{"NO", "47", "", "+47 (0) 987 65 432"},
	{"NO", "47", "", "02000"},
	{"NO", "47", "", "00123"},
	{"DK", "45", "", "+45 (0) 32 12 34 56"},
	{"IT", "39", "", "06 6982 0000"},
	{"IT", "39", "", "+39 06 6982 0000"},
	{"IT", "39", "", "0039 06 6982 0000"},
	{"IT", "39", "0", "06 6982 0000"},
	{"IT", "39", "", "+39 312 345 6789"},
	{"GB", "44", "0", "07700 900123"},
	{"GB", "44", "0", "0 20 7946 0958"},
	{"DE", "49", "0", "0049 0 30 1234567"},
	{"NO", "47", "", "+47 98765432 ext. 12"},
	{"NO", "47", "", "98765432 / 12"},
	{"NO", "47", "", "tel:+47-98765432"},
	{"NO", "47", "", "0047 98 76 54 32"},
	{"NO", "47", "", "+ 47 98 76 54 32"},
	{"NO", "47", "", "(+47) 98765432"},
	{"NO", "47", "", "+4798765432"},
};

static void
explore_notations(const PhoneNumberUtil &util)
{
	printf("phonediff: notations outside the seed's rule (not a failure):\n");
	printf("    %-26s %-3s %-6s %-18s %-18s %s\n", "written", "cc", "trunk",
		   "ours (strict)", "ours (lenient)", "libphonenumber");
	for (const Explore &e : explore)
	{
		Country		c = {e.region, e.cc, e.trunk, ""};
		PhoneNumber pn;
		string		lib = "(error)";

		if (util.Parse(e.text, e.region, &pn) == PhoneNumberUtil::NO_PARSING_ERROR)
		{
			util.Format(pn, PhoneNumberUtil::E164, &lib);
			if (!util.IsValidNumber(pn))
				lib += " (not valid)";
		}
		printf("    %-26s %-3s %-6s %-18s %-18s %s\n",
			   ("'" + string(e.text) + "'").c_str(), e.cc,
			   (string("'") + e.trunk + "'").c_str(),
			   ours(e.text, false, c).c_str(), ours(e.text, true, c).c_str(),
			   lib.c_str());
	}
}

/* Norway's valid 5-digit numbers that start with 00 read as 00 + country */
static void
explore_norway_short(const PhoneNumberUtil &util)
{
	int			valid = 0;
	int			valid00 = 0;
	char		buf[8];

	for (int i = 0; i < 10000; i++)
	{
		PhoneNumber pn;

		snprintf(buf, sizeof(buf), "0%04d", i);
		if (util.Parse(string("+47") + buf, "NO", &pn) ==
			PhoneNumberUtil::NO_PARSING_ERROR && util.IsValidNumber(pn))
		{
			valid++;
			if (buf[1] == '0')
				valid00++;
		}
	}
	printf("phonediff: Norwegian 5-digit numbers starting with 0 that libphonenumber calls valid: %d, of which start with 00: %d\n",
		   valid, valid00);
}

int
main(int argc, char **argv)
{
	const PhoneNumberUtil &util = *PhoneNumberUtil::GetInstance();
	int			per_country = argc > 1 ? atoi(argv[1]) : 2200;
	unsigned	seed = argc > 2 ? (unsigned) atoi(argv[2]) : 20261128;
	std::mt19937 rng(seed);
	long		numbers = 0;
	long		forms = 0;
	long		unexplained = 0;
	std::map<string, long> known_counts;
	std::map<string, std::vector<string>> unexplained_examples;

	for (const Country &c : countries)
	{
		std::set<string> seen;
		std::vector<string> examples;
		std::set<PhoneNumberUtil::PhoneNumberType> types;
		long		attempts = 0;
		int			country_code = atoi(c.cc);

		util.GetSupportedTypesForRegion(c.region, &types);
		for (auto t : types)
		{
			PhoneNumber ex;
			string		nsn;

			if (util.GetExampleNumberForType(c.region, t, &ex))
			{
				util.GetNationalSignificantNumber(ex, &nsn);
				examples.push_back(nsn);
			}
		}

		while ((int) seen.size() < per_country && attempts < 400L * per_country)
		{
			string		nsn;
			PhoneNumber pn;
			string		e164;
			std::vector<Form> fs;
			string		national;
			string		intl;
			string		abroad;
			string		rfc;

			attempts++;
			if (attempts % 2 == 0 && !examples.empty())
			{
				/* an example number, its tail randomized, maybe resized */
				const string &ex = examples[rng() % examples.size()];
				size_t		keep = 1 + rng() % 3;
				int			len = (int) ex.size() + (int) (rng() % 3) - 1;

				if (keep > ex.size())
					keep = ex.size();
				nsn = ex.substr(0, keep);
				while ((int) nsn.size() < len)
					nsn += (char) ('0' + rng() % 10);
			}
			else
			{
				/* any digits, any length up to 15 with the country code */
				int			len = 4 + (int) (rng() % (15 - strlen(c.cc) - 3));

				for (int i = 0; i < len; i++)
					nsn += (char) ('0' + rng() % 10);
			}

			if (util.Parse("+" + string(c.cc) + nsn, c.region, &pn) !=
				PhoneNumberUtil::NO_PARSING_ERROR)
				continue;
			if (pn.country_code() != country_code || !util.IsValidNumber(pn))
				continue;
			util.Format(pn, PhoneNumberUtil::E164, &e164);
			if (!seen.insert(e164).second)
				continue;
			util.GetNationalSignificantNumber(pn, &nsn);

			util.Format(pn, PhoneNumberUtil::NATIONAL, &national);
			util.Format(pn, PhoneNumberUtil::INTERNATIONAL, &intl);
			util.FormatOutOfCountryCallingNumber(pn, c.abroad, &abroad);
			util.Format(pn, PhoneNumberUtil::RFC3966, &rfc);

			fs.push_back({"national", national, true});
			fs.push_back({"national, dashes", replace_all(national, ' ', '-'), true});
			fs.push_back({"national, dots", replace_all(national, ' ', '.'), true});
			fs.push_back({"national, parentheses", paren_first_group(national), true});
			fs.push_back({"national, digits only", digits_only(national, false), true});
			fs.push_back({"+ international", intl, true});
			fs.push_back({"+ international, dashes", replace_all(intl, ' ', '-'), true});
			fs.push_back({"+ E.164", e164, true});
			fs.push_back({"00 from abroad", abroad, true});
			fs.push_back({"00 from abroad, digits only", digits_only(abroad, false), true});
			fs.push_back({"00 from abroad, dots", replace_all(abroad, ' ', '.'), true});
			fs.push_back({"tel: URI", rfc, false});
			fs.push_back({"national, blanks around", " \t" + national + " ", false});

			numbers++;
			for (const Form &f : fs)
			{
				PhoneNumber back;
				string		lib;

				/* libphonenumber must read its own form back to the number */
				if (util.Parse(f.text, c.region, &back) !=
					PhoneNumberUtil::NO_PARSING_ERROR)
					continue;
				util.Format(back, PhoneNumberUtil::E164, &lib);
				if (lib != e164)
					continue;

				for (int lenient = f.strict ? 0 : 1; lenient <= 1; lenient++)
				{
					string		got = ours(f.text, lenient != 0, c);
					const char *why;

					forms++;
					if (got == lib)
						continue;
					why = known_difference(c, nsn, f);
					if (why)
					{
						known_counts[string(c.region) + ": " + why]++;
						continue;
					}
					unexplained++;
					{
						std::vector<string> &v =
							unexplained_examples[string(c.region) + ", " + f.label +
												 (lenient ? " (lenient)" : " (strict)")];

						if (v.size() < 4)
							v.push_back("'" + f.text + "': ours " + got +
										", libphonenumber " + lib);
					}
				}
			}
		}
		printf("phonediff: %s (+%s, trunk '%s'): %zu valid numbers from %ld candidates\n",
			   c.region, c.cc, c.trunk, seen.size(), attempts);
		if ((int) seen.size() < per_country)
		{
			printf("phonediff: too few valid numbers for %s\n", c.region);
			return 2;
		}
	}

	explore_notations(util);
	explore_norway_short(util);
	for (auto &k : known_counts)
		printf("phonediff: documented difference, %s: %ld forms\n",
			   k.first.c_str(), k.second);
	for (auto &u : unexplained_examples)
	{
		printf("phonediff: DISAGREEMENT %s:\n", u.first.c_str());
		for (auto &e : u.second)
			printf("    %s\n", e.c_str());
	}
	printf("phonediff: %ld numbers compared in %ld written forms; %ld unexplained disagreements\n",
		   numbers, forms, unexplained);
	return unexplained ? 1 : 0;
}
