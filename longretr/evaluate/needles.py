"""Content of the regenerated synthetic tasks.

NEEDLES: 100 (fact, question) pairs for needle retrieval. LongEmbed had GPT-4 write 100 facts
"covering a variety of domains including physics, history, geometry, art" and one query for each;
those exact pairs are only in the published dataset, so these were written for longretr in the
same style (a one-sentence fact; a short question that the fact answers).

FIRST_NAMES x LAST_NAMES: person names for personalized passkey retrieval (LongEmbed's examples
look like "Malayah Graves", "Kyree Mays"); a name is never reused within one context length.
"""

# One pair per two lines: the fact, then (indented) its question.
_PAIRS = """
The law of universal gravitation was formulated by Isaac Newton.
    Who formulated the law of universal gravitation?
The speed of light in a vacuum is about 299,792 kilometres per second.
    How fast does light travel in a vacuum?
The Great Pyramid of Giza was built for the pharaoh Khufu.
    For which pharaoh was the Great Pyramid of Giza built?
The sum of the interior angles of a triangle is 180 degrees.
    What is the sum of the interior angles of a triangle?
The Mona Lisa was painted by Leonardo da Vinci.
    Who painted the Mona Lisa?
Water boils at 100 degrees Celsius at sea level.
    At what temperature does water boil at sea level?
The Treaty of Westphalia ended the Thirty Years' War in 1648.
    Which treaty ended the Thirty Years' War?
The chemical symbol for gold is Au, from the Latin word aurum.
    What is the chemical symbol for gold?
The largest moon of Saturn is Titan.
    What is the largest moon of Saturn?
Penicillin was discovered by Alexander Fleming in 1928.
    Who discovered penicillin?
A regular hexagon has six sides of equal length.
    How many sides does a regular hexagon have?
The Starry Night was painted by Vincent van Gogh in 1889.
    Who painted The Starry Night?
The Magna Carta was sealed by King John of England in 1215.
    Which English king sealed the Magna Carta?
Mount Everest is the highest mountain above sea level on Earth.
    What is the highest mountain above sea level?
The mitochondria produce most of the chemical energy of a cell.
    Which part of a cell produces most of its chemical energy?
Beethoven's Ninth Symphony ends with the Ode to Joy.
    Which symphony ends with the Ode to Joy?
The Pythagorean theorem relates the three sides of a right triangle.
    Which theorem relates the sides of a right triangle?
The Berlin Wall fell in November 1989.
    When did the Berlin Wall fall?
The Amazon River carries more water than any other river.
    Which river carries the most water?
The theory of general relativity was published by Albert Einstein in 1915.
    Who published the theory of general relativity?
Michelangelo painted the ceiling of the Sistine Chapel.
    Who painted the ceiling of the Sistine Chapel?
The first human landing on the Moon took place in July 1969.
    When did humans first land on the Moon?
A circle's circumference equals pi times its diameter.
    How is the circumference of a circle computed?
Diamond and graphite are both made of pure carbon.
    What element are diamond and graphite made of?
The Rosetta Stone helped scholars decipher Egyptian hieroglyphs.
    What helped scholars decipher Egyptian hieroglyphs?
The blue whale is the largest animal known to have lived.
    What is the largest animal known to have lived?
Frida Kahlo painted many self-portraits in Mexico City.
    Which painter made many self-portraits in Mexico City?
The printing press with movable type was introduced in Europe by Johannes Gutenberg.
    Who introduced the printing press with movable type in Europe?
Sound travels faster in water than in air.
    Does sound travel faster in water or in air?
The Silk Road connected China with the Mediterranean world.
    Which trade route connected China with the Mediterranean?
A cube has twelve edges and eight vertices.
    How many edges does a cube have?
The Eiffel Tower was completed in 1889 for the World's Fair in Paris.
    When was the Eiffel Tower completed?
Photosynthesis converts carbon dioxide and water into glucose and oxygen.
    What does photosynthesis convert carbon dioxide and water into?
The Battle of Hastings was fought in 1066.
    In which year was the Battle of Hastings fought?
Claude Monet's paintings of water lilies were made in his garden at Giverny.
    Where did Claude Monet paint his water lilies?
The human heart has four chambers.
    How many chambers does the human heart have?
The Sahara is the largest hot desert in the world.
    What is the largest hot desert in the world?
Marie Curie was the first person to win Nobel Prizes in two sciences.
    Who first won Nobel Prizes in two different sciences?
The golden ratio is approximately 1.618.
    What is the approximate value of the golden ratio?
The Roman Colosseum could hold around fifty thousand spectators.
    How many spectators could the Roman Colosseum hold?
Jupiter is the largest planet in the Solar System.
    Which planet is the largest in the Solar System?
The Thinker is a bronze sculpture by Auguste Rodin.
    Who sculpted The Thinker?
Absolute zero is minus 273.15 degrees Celsius.
    What temperature is absolute zero in Celsius?
The Ottoman Empire captured Constantinople in 1453.
    When did the Ottomans capture Constantinople?
DNA has the shape of a double helix.
    What shape does DNA have?
The Nile flows north into the Mediterranean Sea.
    Into which sea does the Nile flow?
Johann Sebastian Bach composed the Brandenburg Concertos.
    Who composed the Brandenburg Concertos?
An octagon has eight interior angles that sum to 1080 degrees.
    What do the interior angles of an octagon sum to?
The French Revolution began with the storming of the Bastille in 1789.
    Which event began the French Revolution?
Helium is the second lightest element.
    What is the second lightest element?
The Great Wall of China was built over many centuries to guard northern borders.
    Why was the Great Wall of China built?
Pablo Picasso co-founded the Cubist movement with Georges Braque.
    Who co-founded Cubism with Georges Braque?
The Pacific is the largest and deepest ocean on Earth.
    Which ocean is the largest and deepest?
Gregor Mendel studied inheritance by breeding pea plants.
    Which plants did Gregor Mendel breed to study inheritance?
The volume of a sphere is four thirds pi times the radius cubed.
    What is the formula for the volume of a sphere?
The Declaration of Independence of the United States was adopted in 1776.
    When was the United States Declaration of Independence adopted?
Venus is the hottest planet in the Solar System.
    Which planet is the hottest in the Solar System?
The Girl with a Pearl Earring was painted by Johannes Vermeer.
    Who painted the Girl with a Pearl Earring?
Honey bees communicate the location of flowers with a waggle dance.
    How do honey bees tell each other where flowers are?
The Roman Empire in the West fell in 476.
    When did the Western Roman Empire fall?
Electric current is measured in amperes.
    In what unit is electric current measured?
The Taj Mahal was built by the emperor Shah Jahan in memory of his wife.
    Who built the Taj Mahal?
Prime numbers have exactly two distinct divisors.
    How many distinct divisors does a prime number have?
Mozart wrote his first symphony at the age of eight.
    How old was Mozart when he wrote his first symphony?
Lake Baikal is the deepest lake in the world.
    What is the deepest lake in the world?
Charles Darwin published On the Origin of Species in 1859.
    When did Charles Darwin publish On the Origin of Species?
The Parthenon in Athens was dedicated to the goddess Athena.
    To which goddess was the Parthenon dedicated?
The Earth takes about 365.25 days to orbit the Sun.
    How long does the Earth take to orbit the Sun?
A tessellation covers a plane with shapes that leave no gaps.
    What is a tessellation?
The Hundred Years' War was fought between England and France.
    Which countries fought the Hundred Years' War?
The Scream was painted by Edvard Munch.
    Who painted The Scream?
Newton's third law says every action has an equal and opposite reaction.
    What does Newton's third law say?
The Incas built the mountain citadel of Machu Picchu.
    Who built Machu Picchu?
Octopuses have three hearts.
    How many hearts does an octopus have?
The Renaissance began in Florence in the fourteenth century.
    In which city did the Renaissance begin?
Euclid wrote the Elements, a foundational work of geometry.
    Who wrote the Elements?
The Great Barrier Reef lies off the coast of Queensland, Australia.
    Where is the Great Barrier Reef?
Insulin is produced by the pancreas.
    Which organ produces insulin?
The Statue of Liberty was a gift from France to the United States.
    Which country gave the Statue of Liberty to the United States?
Antonio Vivaldi composed The Four Seasons.
    Who composed The Four Seasons?
Mercury is the planet closest to the Sun.
    Which planet is closest to the Sun?
The Cold War ended with the dissolution of the Soviet Union in 1991.
    When did the Cold War end?
A right angle measures exactly ninety degrees.
    How many degrees is a right angle?
The Terracotta Army was buried with the first emperor of China.
    With whom was the Terracotta Army buried?
Salvador Dali painted The Persistence of Memory with its melting clocks.
    Who painted The Persistence of Memory?
The ozone layer absorbs most of the Sun's ultraviolet radiation.
    What absorbs most of the Sun's ultraviolet radiation?
The Wright brothers made the first powered airplane flight in 1903.
    Who made the first powered airplane flight?
Tokyo is the most populous metropolitan area in the world.
    Which metropolitan area is the most populous in the world?
The Fibonacci sequence starts with 0 and 1 and adds the two previous numbers.
    How is the Fibonacci sequence built?
The Black Death killed a large part of Europe's population in the fourteenth century.
    When did the Black Death strike Europe?
The kilogram is the base unit of mass in the metric system.
    What is the base unit of mass in the metric system?
Hamlet was written by William Shakespeare.
    Who wrote Hamlet?
Antarctica is the coldest continent on Earth.
    Which continent is the coldest?
The Hubble Space Telescope was launched in 1990.
    When was the Hubble Space Telescope launched?
The Alhambra is a palace and fortress in Granada, Spain.
    Where is the Alhambra?
Red blood cells carry oxygen with the protein hemoglobin.
    Which protein lets red blood cells carry oxygen?
The Suez Canal links the Mediterranean Sea and the Red Sea.
    Which seas does the Suez Canal link?
Ada Lovelace wrote the first published algorithm for a computing machine.
    Who wrote the first published algorithm for a computing machine?
A parallelogram has two pairs of parallel sides.
    How many pairs of parallel sides does a parallelogram have?
The Venus de Milo is an ancient Greek statue kept in the Louvre.
    Where is the Venus de Milo kept?
"""
_LINES = [ln.strip() for ln in _PAIRS.strip().splitlines()]
NEEDLES: tuple[tuple[str, str], ...] = tuple(zip(_LINES[0::2], _LINES[1::2]))

FIRST_NAMES: tuple[str, ...] = (
    "Malayah", "Kyree", "Douglas", "Declan", "Denisse", "Cheyenne", "Zyaire", "Cooper", "Cesar", "Sky",
    "Amara", "Brecken", "Calliope", "Dashiell", "Elowen", "Fintan", "Giselle", "Hollis", "Ines", "Jasper",
    "Kalani", "Leopold", "Marisol", "Nico", "Odessa", "Pierce", "Quinn", "Rosalind", "Santiago", "Talia",
    "Ulric", "Vesper", "Wren", "Xiomara", "Yusuf", "Zelda", "Anouk", "Bastian", "Corinne", "Dario",
    "Esme", "Florian", "Greta", "Henrik", "Isadora", "Joaquin", "Kenji", "Lucinda", "Matteo", "Noor",
    "Orion", "Paloma", "Rafferty", "Saoirse", "Teodor", "Uma", "Valentin", "Winona", "Yara", "Zoltan",
)
LAST_NAMES: tuple[str, ...] = (
    "Graves", "Mays", "Alfaro", "Horton", "Wilcox", "Jarvis", "Sweeney", "McCann", "McLean", "Morrow",
    "Ashby", "Blackwood", "Castellano", "Delacroix", "Ellsworth", "Fairbanks", "Galloway", "Hargrove",
    "Ibarra", "Jennings", "Kowalski", "Lindqvist", "Montague", "Navarro", "Okafor", "Pemberton", "Quintero",
    "Rutherford", "Sandoval", "Thorne", "Underhill", "Valdivia", "Whitaker", "Yamamoto", "Zimmerman",
    "Abernathy", "Beaumont", "Carrington", "Dunmore", "Esposito", "Fitzgerald", "Grimaldi", "Holloway",
    "Iversen", "Kensington", "Larkin", "Merriweather", "Nakamura", "Oyelaran", "Prescott", "Radcliffe",
    "Stavros", "Tremblay", "Vasquez", "Wainwright", "Xavier", "Yilmaz", "Zephyr", "Lockhart", "Marchetti",
)
